"""`servetune tune` turns bad input into a one-line error naming it (no server is started)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tuner.cli import app


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["tune", *args])
    return result.exit_code, result.output


def test_unknown_strategy_is_named(tmp_path: Path) -> None:
    code, output = run("embedding", "--strategy", "nope", "--out", str(tmp_path / "s"))
    assert code == 2
    assert "unknown strategy 'nope'" in output
    assert "Traceback" not in output


def test_a_space_for_another_service_is_refused(tmp_path: Path) -> None:
    space = Path(__file__).resolve().parents[2] / "tuner" / "spaces" / "digits.yaml"
    code, output = run("embedding", "--space", str(space), "--out", str(tmp_path / "s"))
    assert code == 2
    assert "--space is for service 'digits'" in output


def test_bad_users_and_quantile_name_the_option(tmp_path: Path) -> None:
    code, output = run("embedding", "--users", "4,x", "--out", str(tmp_path / "s"))
    assert code == 2 and "--users" in output
    code, output = run("embedding", "--slo-quantile", "p90", "--out", str(tmp_path / "s"))
    assert code == 2 and "--slo-quantile" in output


def test_a_bad_budget_or_rate_fails_before_the_target_is_read(tmp_path: Path) -> None:
    """Checked first: a user's service is not imported, nor bodies made up, for a typo."""
    missing = str(tmp_path / "nowhere.py") + ":Service"  # reading it would be another error
    for option, value, message in (
        ("--time-budget", "-5", "--time-budget: must be > 0, got '-5'"),
        ("--rates", "1,x", "--rates: expected comma-separated requests/s, got '1,x'"),
    ):
        code, output = run(missing, option, value, "--out", str(tmp_path / "s"))
        assert code == 2 and message in output, output
    assert not (tmp_path / "s").exists()
