"""The self-contained report.html renders in a real browser (headless Chromium from Debian)."""

import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from medcls.cli import cli
from tests.helpers import FAST, FIGURES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
@pytest.mark.slow
def test_report_html_renders_in_chromium(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", *FAST, *FIGURES, "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out / "report.html"
    assert "src=\"data:image/png;base64," in page.read_text()  # self-contained: no external files
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1000,2400",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (2400, 1000)
    # Rendered text, tables and figures: many grey levels and dark pixels, not a blank page.
    assert len(np.unique(image)) > 50 and (image < 100).mean() > 0.005
