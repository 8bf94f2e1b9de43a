"""``fleet rules check``: a rules file is validated before a worker loads it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from core.cli import app

runner = CliRunner()


def test_the_default_rules_check_out() -> None:
    result = runner.invoke(app, ["rules", "check"])
    assert result.exit_code == 0, result.output
    assert "coolant_overtemp" in result.output


def test_a_bad_rules_file_names_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nrules:\n  - id: x\n    kind: threshold\n    severity: bad\n")
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 1
    assert "rule 'x'" in result.output and "severity" in result.output
    missing = runner.invoke(app, ["rules", "check", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 1
    assert "cannot read" in missing.output
