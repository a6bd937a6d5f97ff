"""A pytest plugin (`-p tests.collect_report`) that writes, after collection, every collected
test's node id and why it would be skipped on this machine (null: it runs) as JSON to the
file named by $VMAE2_COLLECT_REPORT. tests/test_faults_doc.py uses it to check that the
tests docs/faults.md names really run here."""

from __future__ import annotations

import json
import os

from _pytest.skipping import evaluate_skip_marks

# Fixtures that skip their test when the storage servers cannot start (tests/cloud_servers.py).
_SERVER_FIXTURES = {"gcs_server", "s3_server", "bucket", "gcs_bucket"}


def _skip_reason(item, servers_missing: str | None) -> str | None:
  skip = evaluate_skip_marks(item)  # skip / skipif marks, evaluated as a run would
  if skip is not None:
    return skip.reason or "skipped"
  if servers_missing and _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
    return servers_missing
  return None


def pytest_collection_finish(session) -> None:
  out = os.environ.get("VMAE2_COLLECT_REPORT")
  if not out:
    return
  from tests.cloud_servers import available
  missing = available()
  report = {item.nodeid: _skip_reason(item, missing) for item in session.items}
  with open(out, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
