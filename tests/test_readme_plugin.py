"""The user guide's plugin walkthrough (docs/guide.md) is true: its six-hook plugin installs as a distribution, passes
its own medcls.testing checks and trains from the CLI with all six parts."""

import json
import re
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from medcls.cli import cli

README = Path(__file__).resolve().parents[1] / "docs" / "guide.md"  # the walkthrough lives in the user guide


def walkthrough_blocks() -> list[str]:
    section = README.read_text().split("### Writing a plugin, all six hooks", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def write_cases(root: Path) -> Path:
    """Two findings on 16 x 16 arrays, two images per patient, in a JSON-lines manifest."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(40):
        finding = "lesion" if i % 2 else "clear"
        image = rng.normal(size=(16, 16))
        if finding == "lesion":
            image[4:10, 4:10] += 3
        np.save(root / f"{i}.npy", image)
        lines.append(json.dumps({"file": f"{i}.npy", "finding": finding, "patient": f"p{i // 4}_{i % 2}",
                                 "site": "ab"[i % 3 == 0]}))
    (root / "cases.jsonl").write_text("\n".join(lines) + "\n")
    return root / "cases.jsonl"


def test_the_readme_plugin_works_as_written(make_distribution, tmp_path, monkeypatch):
    plugin_code, test_code = walkthrough_blocks()
    make_distribution("medcls-npy", "medcls_npy", plugin_code, entry_point="npy")
    from safetensors.torch import save_file

    import medcls_npy

    # its own test, as the README shows it
    namespace = {"medcls_npy": medcls_npy, "np": np}
    exec(test_code, namespace)
    namespace["test_contracts"](tmp_path)

    weights = tmp_path / "small_cnn.safetensors"
    save_file({k: v.contiguous() for k, v in medcls_npy.SmallCNN(3).state_dict().items()}, str(weights))
    monkeypatch.setattr(medcls_npy, "WEIGHTS", weights)
    listed = CliRunner().invoke(cli, ["plugins"])
    assert listed.exit_code == 0 and '"distribution": "medcls-npy"' in listed.output.replace("'", '"')

    manifest = write_cases(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(manifest), "--out", str(out), "--backbone", "small_cnn",
                                      "--policy", "invert", "--pretrained", "--image-size", "16", "--epochs", "2",
                                      "--finetune-epochs", "1", "--set", "positive_class=lesion", "--set",
                                      "bootstrap=50"])
    assert result.exit_code == 0, result.output
    model = json.loads((out / "model.json").read_text())
    assert "small_cnn_release" in model["weights_origin"]
    used = {(row["plugin"], row["name"]) for row in json.loads((out / "manifest.json").read_text())["plugins"]}
    assert {("npy", "small_cnn"), ("npy", "invert"), ("npy", "jsonl"),
            ("npy", "f2_score")} <= used
    metrics = json.loads((out / "metrics.json").read_text())
    assert "f2_score" in json.dumps(metrics)
