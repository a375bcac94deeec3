"""The run logger's TensorBoard writer (apts.training.logger)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_failing_tensorboard_write_is_one_error_in_the_training_thread(tmp_path):
    """A disk that fills makes TensorBoard's writer thread fail: the training thread gets
    the error on its next write (the run reports it in one line), and the thread itself
    prints no traceback to stderr."""
    code = textwrap.dedent(
        f"""
        import time
        from apts.training.logger import tensorboard_writer

        w = tensorboard_writer({str(tmp_path / "tb")!r})
        def full(data):
            raise OSError(28, "No space left on device")
        # the file under the writer thread: the disk is full from here on
        w._get_file_writer().event_writer._async_writer._worker._record_writer.write = full
        for _ in range(100):
            try:
                w.add_scalar("x", 1.0, 2)
                w.flush()
            except OSError as e:
                print("main thread:", e)
                break
            time.sleep(0.05)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "main thread: [Errno 28] No space left on device" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
