"""The daemon runs jobs to a model and continues them after ``kill -9`` in any state."""

from __future__ import annotations

from tests.daemon.conftest import DaemonProcess


def test_simulated_scan_to_a_model(daemon: DaemonProcess) -> None:
    job = daemon.call("scan", {"positions": 6})
    assert job["state"] == "queued" and job["positions"] == 6
    done = daemon.wait_job(job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    model = daemon.data / "jobs" / job["id"] / "model"
    assert done["model_dir"] == str(model)
    assert any(model.iterdir())
    assert done["captured"] == 6
