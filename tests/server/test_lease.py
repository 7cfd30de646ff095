"""The evaluator lease on SQLite and PostgreSQL: one holder, takeover after expiry (new term), release."""

from __future__ import annotations

import time

from server.db.session import Database
from server.lease import Lease
from server.migrations import upgrade
from tests.server.conftest import DbTarget


def test_lease_compare_and_set(db_target: DbTarget) -> None:
    db = Database(db_target.url, db_target.schema)
    try:
        upgrade(db)
        a, b = Lease(db, "a", 0.6), Lease(db, "b", 0.6)
        assert a.renew() == (True, True)  # the first ever: creates the row
        assert b.renew() == (False, False)
        assert a.renew() == (True, False) and a.valid()  # renewed: nothing to reload
        assert b.renew() == (False, False) and not b.valid()
        time.sleep(0.7)  # a stopped renewing
        assert not a.valid()
        assert b.renew() == (True, True) and b.term == 2
        assert a.renew() == (False, False) and not a.held
        assert b.renew() == (True, False)
        holder, left = b.holder_now() or ("", 0.0)
        assert holder == "b" and 0 < left <= 0.6
        b.release()  # a graceful stop: the other takes over at once, with a new term
        assert a.renew() == (True, True) and a.term == 3
        restarted = Lease(db, "a", 0.6)  # the same id after a restart: its own lease back at once, same term
        assert restarted.renew() == (True, True) and restarted.term == 3
    finally:
        db.dispose()
