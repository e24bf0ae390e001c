"""The contract's helpers that need no database."""

from __future__ import annotations

from jobctl.jobspec import stored_params


def test_stored_params_keep_only_what_was_given() -> None:
    params = stored_params(date="2026-01-02", sources=["a", "b"], sets=[], dry_run=True, x=None)
    assert params == {"date": "2026-01-02", "sources": "a,b", "dry_run": "true"}
    assert stored_params(missing=False, periods=(), on="") == {}
