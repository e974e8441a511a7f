"""`alertd dlq list|replay`: what could not be delivered is listed and sent again, same id."""

from __future__ import annotations

from pathlib import Path

import orjson
import redis.asyncio as aioredis

from alertd.notify.outbox import Outbox
from alertd.storage.partitions import Partitions
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_delivery import SECRET, dead_letters, make_notification, outbox_empty, webhook
from tests.test_test_alert import alertd


async def dead_lettered(daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver) -> str:
    """Start a daemon whose `hook` refuses one notification; return that notification's id."""
    daemons.write(channels=webhook("hook", f"{receiver.url}/hook", f'secret = "{SECRET}"'))
    await daemons.start()
    receiver.script = [(400, {}, "unknown team")]
    n = make_notification("hook")
    await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(n)
    await wait_for(lambda: dead_letters(redis))
    await wait_for(outbox_empty(redis, "hook"))
    return n.id


class TestList:
    """Dead notifications are listed with their channel and reason, as a table or JSON."""

    async def test_table_and_json(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        nid = await dead_lettered(daemons, redis, receiver)
        config = daemons.dir / "alertd.toml"

        table = await alertd(config, "dlq", "list")
        as_json = await alertd(config, "dlq", "list", "--json")

        [entry] = orjson.loads(as_json.stdout)["dead_letters"]
        assert (0, 0) == (table.code, as_json.code)
        header, row = table.stdout.splitlines()
        assert ["ID", "SOURCE", "CHANNEL/STREAM_ID", "AT", "ATTEMPTS", "REASON"] == header.split()
        assert [entry["id"], "notification", "hook"] == row.split()[:3]
        # The table names the receiver's answer, not only "permanent failure".
        attempts_and_reason = " ".join(row.split("Z", 1)[1].split())
        assert "1 permanent failure: HTTP 400: unknown team" == attempts_and_reason
        assert ("hook", nid, "HTTP 400: unknown team", 1) == (
            entry["channel"],
            entry["notification_id"],
            entry["last_error"],
            entry["attempts"],
        )


class TestReplay:
    """A replayed notification goes out again with its original id, and leaves the list."""

    async def test_replay_by_id_sends_the_original_id(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        nid = await dead_lettered(daemons, redis, receiver)
        [(dead_id, _)] = await redis.xrange("alertd:dead")

        run = await alertd(daemons.dir / "alertd.toml", "dlq", "replay", dead_id.decode())

        assert (0, "replayed 1, failed 0, not found 0") == (run.code, run.stdout.strip())
        await wait_for(lambda: len(receiver.received) >= 2)
        again = receiver.received[1]
        assert (nid, nid) == (again.json()["id"], again.headers["webhook-id"])
        await wait_for(outbox_empty(redis, "hook"))
        assert [] == await dead_letters(redis)

    async def test_replay_all(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        nid = await dead_lettered(daemons, redis, receiver)

        run = await alertd(daemons.dir / "alertd.toml", "dlq", "replay")

        assert 0 == run.code
        await wait_for(lambda: len(receiver.received) >= 2)
        assert nid == receiver.received[1].json()["id"]

    async def test_unknown_id_exits_one(self, tmp_path: Path, daemons: DaemonFactory) -> None:
        daemons.write()
        run = await alertd(daemons.dir / "alertd.toml", "dlq", "replay", "1-1")

        assert (1, "replayed 0, failed 0, not found 1") == (run.code, run.stdout.strip())
