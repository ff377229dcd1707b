"""A render from a terminal: the progress bar, the verbose loss lines, and Ctrl-C as "stop and keep"."""

from __future__ import annotations

import os
import signal

import pytest

from engine.jobs import Progress
from engine.terminal import TerminalProgress


def test_ctrl_c_while_rendering_sets_cancel_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    with TerminalProgress() as bar:
        os.kill(os.getpid(), signal.SIGINT)  # raises KeyboardInterrupt here unless the block catches it
        assert bar.cancel.wait(5)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_resumed_job_s_bar_starts_where_it_is_and_verbose_prints_each_loss(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TerminalProgress(verbose=True) as bar:
        for step in (5, 6):  # steps 1-4 were done before a restart
            bar(Progress(iteration=step - 3, total=5, loss=0.5, frame=2, frames=3, step=step, steps=15))
    err = capsys.readouterr().err
    assert "6/15" in err
    assert "frame 2/3 iteration 3: loss 0.50000" in err
    assert "frame 2/3 iteration 2: loss 0.50000" in err
    assert "iteration 1:" not in err  # only reported iterations are printed


def test_a_job_refused_before_its_first_report_prints_no_bar(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="refused"), TerminalProgress(desc="single image"):
        raise ValueError("refused")
    assert "single image" not in capsys.readouterr().err
