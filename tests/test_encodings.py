"""GBK and UTF-8-BOM copies of real Chinese data train and evaluate to exactly the UTF-8 results."""

import hashlib
import json

from conftest import encodable_rows, read_shared, write_csv


def test_gbk_and_bom_copies_give_identical_weights_and_metrics(tmp_path, cli, tiny_model_dir):
    train_rows = encodable_rows(read_shared("zh_reviews", "train", limit=300), "gbk")
    test_rows = encodable_rows(read_shared("zh_reviews", "test", limit=100), "gbk")
    results = {}
    for encoding in ("utf-8", "gbk", "utf-8-sig"):
        train = write_csv(tmp_path / f"train-{encoding}.csv", train_rows, encoding=encoding)
        test = write_csv(tmp_path / f"test-{encoding}.csv", test_rows, encoding=encoding)
        run = tmp_path / f"run-{encoding}"
        code, _, stderr = cli("train", train, "-m", tiny_model_dir, "-o", run, "--max-steps", "6", "--cpu")
        assert code == 0, stderr
        manifest = json.loads((run / "bertclf.json").read_text())
        assert manifest["data"]["train"]["encoding"] == ("gb18030" if encoding == "gbk" else "utf-8-sig")
        code, stdout, stderr = cli("eval", run, test, "--json", "--cpu")
        assert code == 0, stderr
        metrics = json.loads(stdout)["metrics"]
        results[encoding] = (hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest(), metrics)
    assert results["gbk"] == results["utf-8"] == results["utf-8-sig"]
