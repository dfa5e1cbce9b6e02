"""automl.console's stderr filter in real processes: TensorFlow's noise out, last words in.

Each test starts a Python process that installs the filter as ``automl`` does, writes what
TensorFlow writes to file descriptor 2 (absl's preamble, an info line, tf.data's 2.21 notice
about ``use_unbounded_threadpool``) and a real error line, then dies the way a worker dies: a
fatal abort, the OOM killer's SIGKILL. The reader of its stderr (a terminal, the supervisor)
must see the error lines and never the noise.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from automl.console import TF_NOISE

# Lines as TensorFlow 2.21 writes them (the NodeDef one shortened from ~1,000 characters).
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796313793.427659   24388 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "E0000 00:00:1796313801.101885   24388 node_def_util.cc:682] NodeDef mentions attribute "
    "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset; "
    "signature=input_dataset:variant, other_arguments: -> handle:variant; attr=f:func> This may "
    "be expected if your graph generating binary is newer than this binary. Unknown attributes "
    "will be ignored. NodeDef: {{node ParallelMapDatasetV2/_15}}",
]
REAL_ERROR = (
    "E0000 00:00:1796313802.000001   24388 cuda_driver.cc:152] failed call to cuInit: "
    "CUDA_ERROR_OUT_OF_MEMORY"
)

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from automl.console import filter_stderr
    filter_stderr()
    for line in sys.argv[2:]:
        os.write(2, (line + "\\n").encode())  # straight to the descriptor, as TensorFlow's C++
    print("error: the last words before the end", file=sys.stderr, flush=True)
    if sys.argv[1] == "abort":
        os.abort()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize(("death", "status"), [("abort", -signal.SIGABRT), ("kill", -9)])
def test_the_last_lines_of_a_process_that_dies_get_through_and_the_noise_does_not(
    death: str, status: int
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, death, *NOISE, REAL_ERROR],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == status
    assert done.stderr.splitlines() == [REAL_ERROR, "error: the last words before the end"]


def test_lines_pass_through_as_they_come() -> None:
    # The process waits on stdin after its first line: the line must arrive before it ends.
    child = textwrap.dedent(
        """
        import sys
        from automl.console import filter_stderr
        filter_stderr()
        print("trial 0 complete", file=sys.stderr, flush=True)
        sys.stdin.readline()
        print("done", file=sys.stderr, flush=True)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None and process.stdin is not None
    try:
        assert process.stderr.readline() == "trial 0 complete\n"
        assert process.poll() is None  # still running: the line came as it was written
        process.stdin.write("\n")
        process.stdin.close()
        assert process.stderr.read() == "done\n"
    finally:
        process.kill()
        process.wait()


def test_the_noise_pattern_keeps_real_errors() -> None:
    assert all(TF_NOISE.match(line) for line in NOISE)
    assert not TF_NOISE.match(REAL_ERROR)
    assert not TF_NOISE.match("error: data.path: no such folder")
