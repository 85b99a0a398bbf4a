"""The README's fast commands (the ``tiny`` config ones) run as written, from an empty folder, and
print what the README says they print (its numbers aside, which depend on the processor)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
NUMBER = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"


def _bash_blocks(text: str) -> list:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def _tiny_commands() -> list:
    """Every ``pyro-vae`` line of the README's bash blocks that works on the tiny config, in order."""
    lines = [line.split("  #")[0].strip() for block in _bash_blocks(README.read_text()) for line in block.splitlines()]
    return [line for line in lines if line.startswith("pyro-vae ") and re.search(r"\btiny\b|runs/tiny", line)]


def _pyro_vae() -> list:
    script = Path(sys.executable).parent / "pyro-vae"  # the installed entry point, as a user runs it
    return [str(script)] if script.exists() else [sys.executable, "-m", "pyro_vae"]


def _as_pattern(line: str) -> str:
    """A README output line as a regex: every number may differ, the words and their order may not."""
    parts = re.split(f"({NUMBER})", line)
    return "".join(NUMBER if i % 2 else re.escape(part) for i, part in enumerate(parts))


def test_the_readme_quickstart_runs_as_written_and_prints_what_it_shows(tmp_path):
    commands = _tiny_commands()
    assert commands[:4] == ["pyro-vae train tiny", "pyro-vae evaluate runs/tiny --k 1000", "pyro-vae plot runs/tiny",
                            "pyro-vae show runs/tiny"]
    assert len(commands) >= 6  # the quickstart and the swaps after it
    env = {**os.environ, "PYRO_VAE_DATA": str(tmp_path / "data")}
    printed = []
    for command in commands:
        done = subprocess.run(_pyro_vae() + shlex.split(command)[1:], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0 and "Traceback" not in done.stderr, f"{command}: {done.stderr}"
        printed.append(done.stdout)
    shown = re.search(r"```text\n(.*?)```", README.read_text(), re.S).group(1).splitlines()
    got = (printed[0] + printed[1]).splitlines()
    assert len(got) == len(shown), (got, shown)
    for line, readme_line in zip(got, shown):
        assert re.fullmatch(_as_pattern(readme_line), line), (line, readme_line)
    assert (tmp_path / "runs" / "tiny" / "plots" / "elbo_curves.png").exists()
    assert "eval_iwae_k1000_test.json" in printed[3]  # show lists the estimate
    assert (tmp_path / "runs" / "tiny_vamp" / "checkpoint.pt").exists()


def test_the_readme_names_only_shipped_configs_and_existing_files():
    """Every config a README command trains exists, and every file the README points to is there."""
    from pyro_vae.config import shipped_configs

    text = README.read_text()
    for block in _bash_blocks(text):
        for name in re.findall(r"pyro-vae train (\w+)\b", block):
            assert name in shipped_configs() or name == "runs", name
    for path in re.findall(r"`((?:docs|examples|benchmarks)/[\w./-]+)`", text) + re.findall(r"\]\(((?:docs)/[\w./-]+)\)", text):
        assert (README.parent / path).exists(), path
