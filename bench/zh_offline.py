"""Offline Chinese against TF-IDF (issue 17): scratch without pre-training, scratch pre-trained by
`bertclf pretrain`, and TF-IDF + logistic regression, side by side on the shared Chinese tasks.

For each task: TF-IDF (character 1-2 grams, C=10, the reference in ../shared/data/README.md; sublinear tf as a
second row), then `bertclf train --model scratch:tiny` with nothing else changed, then `bertclf pretrain` on the
unlabelled reviews plus the task's own training texts (labels ignored) and `bertclf train --model DIR`, again
with the fine-tuning defaults. Every bertclf run gets `--validation dev.csv` and is scored by `bertclf eval` on
test.csv. Writes bench/results/zh-offline-<timestamp>.json (commands, seconds, metrics).

    .venv/bin/python bench/zh_offline.py                       # both tasks, pre-training included (~1.5 h)
    .venv/bin/python bench/zh_offline.py --tasks zh_reviews --pretrained zh_reviews=/tmp/pt/zh_reviews
    .venv/bin/python bench/zh_offline.py --seeds 42,7 --skip-scratch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
UNLABELLED = DATA / "zh_unlabelled" / "shopping_reviews.txt"
BERTCLF = str(Path(sys.executable).with_name("bertclf"))
# Pre-training settings measured for the README (45 minutes on 2 cores at one thread per task, both tasks at once).
PRETRAIN_ARGS = ["--model", "scratch:tiny", "--max-length", "256", "--max-steps", "3000", "--eval-every", "500"]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import child_env, run  # noqa: E402


def tfidf(task: str) -> list[dict]:
    """TF-IDF + logistic regression on character 1-2 grams (plain and sublinear tf), trained on train.csv."""
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    train, test = (pd.read_csv(DATA / task / f"{split}.csv") for split in ("train", "test"))
    rows = []
    for sublinear in (False, True):
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=sublinear)
        classifier = LogisticRegression(C=10, max_iter=2000)
        started = time.perf_counter()
        classifier.fit(vectorizer.fit_transform(train.text), train.label)
        predicted = classifier.predict(vectorizer.transform(test.text))
        rows.append({"side": "tfidf_char_1_2" + ("_sublinear" if sublinear else ""),
                     "seconds": round(time.perf_counter() - started, 2),
                     "accuracy": accuracy_score(test.label, predicted),
                     "macro_f1": f1_score(test.label, predicted, average="macro")})
    return rows


def fine_tune(task: str, model: str, seed: int, out: Path, threads: int) -> dict:
    """`bertclf train` with the defaults (plus --validation and --seed), then `bertclf eval` on test.csv."""
    folder = DATA / task
    cmd = [BERTCLF, "train", str(folder / "train.csv"), "--validation", str(folder / "dev.csv"), "--model", model,
           "--seed", str(seed), "-o", str(out), "--overwrite", "--json"]
    trained = run(cmd, child_env(threads)).check()
    scored = run([BERTCLF, "eval", str(out), str(folder / "test.csv"), "--json"], child_env(threads)).check()
    train_doc, metrics = trained.json(), scored.json()["metrics"]
    max_length = json.loads((out / "bertclf.json").read_text())["max_length"]
    return {"command": " ".join(cmd[1:]), "seed": seed, "wall_s": round(trained.wall_s, 1), "max_length": max_length,
            "dev_accuracy": train_doc["validation_metrics"]["accuracy"],
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def pretrain(task: str, out: Path, threads: int) -> dict:
    cmd = [BERTCLF, "pretrain", str(UNLABELLED), str(DATA / task / "train.csv"), *PRETRAIN_ARGS, "-o", str(out),
           "--overwrite", "--json"]
    done = run(cmd, child_env(threads), timeout=3 * 3600).check()
    doc = done.json()
    return {"command": " ".join(cmd[1:]), "wall_s": round(done.wall_s, 1), "validation": doc["validation"],
            "steps": doc["steps"], "timings": doc["timings"]}


def pretrained_record(directory: Path) -> dict:
    """What an earlier `bertclf pretrain` run (given with --pretrained) wrote about itself."""
    manifest = json.loads((directory / "pretrain.json").read_text())
    return {"directory": str(directory), "argv": manifest.get("argv"), "validation": manifest.get("validation"),
            "steps": manifest.get("steps_done"), "timings": manifest.get("timings")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="zh_reviews,zh_shopping_cats")
    parser.add_argument("--seeds", default="42", help="fine-tuning seeds, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pretrained", action="append", default=[], metavar="TASK=DIR",
                        help="use this `bertclf pretrain` output instead of pre-training again")
    parser.add_argument("--skip-scratch", action="store_true", help="leave out the run without pre-training")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bertclf-zh-offline"))
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.pretrained)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    results: dict = {"started": datetime.now().isoformat(timespec="seconds"), "threads": args.threads, "tasks": {}}
    for task in args.tasks.split(","):
        record: dict = {"tfidf": tfidf(task), "scratch": [], "pretrained": []}
        results["tasks"][task] = record
        if not args.skip_scratch:
            record["scratch"] = [fine_tune(task, "scratch:tiny", seed, args.work / f"{task}-scratch-{seed}",
                                           args.threads) for seed in seeds]
        model_dir = Path(given[task]) if task in given else args.work / f"{task}-pretrain"
        record["pretraining"] = (pretrained_record(model_dir) if task in given
                                 else pretrain(task, model_dir, args.threads))
        record["pretrained"] = [fine_tune(task, str(model_dir), seed, args.work / f"{task}-pretrained-{seed}",
                                          args.threads) for seed in seeds]
        for side in ("tfidf", "scratch", "pretrained"):
            for row in record[side]:
                print(f"{task:17} {row.get('side', side):26} seed {row.get('seed', '-'):>3}  "
                      f"accuracy {row['accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}")
    out = ROOT / "bench" / "results" / f"zh-offline-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
