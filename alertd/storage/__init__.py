"""How alertd's state sits in Redis: key names (keys.py) and Lua scripts (lua/)."""
