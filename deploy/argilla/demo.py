"""Create a small Argilla dataset to try al-backend on: examples/tasks.jsonl (36 news sentences) as records,
its 6 labels submitted as responses. Needs only the argilla SDK and an owner or admin key.

    export ARGILLA_API_URL=http://localhost:6900 ARGILLA_API_KEY=argilla.apikey
    python deploy/argilla/demo.py                       # dataset "al-demo" in workspace "al-demo"
    al-backend prioritize --source argilla --dataset al-demo --workspace al-demo
    al-backend argilla watch --dataset al-demo --workspace al-demo --every 30 --min-new 3

Then, in the Argilla UI: open the dataset, sort by the metadata property al_priority, descending.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="al-demo")
    parser.add_argument("--workspace", default="al-demo")
    parser.add_argument("--tasks", default=str(ROOT / "examples" / "tasks.jsonl"))
    args = parser.parse_args()
    url, key = os.environ.get("ARGILLA_API_URL"), os.environ.get("ARGILLA_API_KEY")
    if not url or not key:
        print("set ARGILLA_API_URL and ARGILLA_API_KEY (an owner or admin key)", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    import argilla as rg

    rows = [json.loads(line) for line in Path(args.tasks).read_text().splitlines() if line.strip()]
    labels = sorted({r["label"] for r in rows if r.get("label")})
    client = rg.Argilla(api_url=url, api_key=key)
    if client.workspaces(args.workspace) is None:
        rg.Workspace(name=args.workspace, client=client).create()
    if client.datasets(name=args.dataset, workspace=args.workspace) is not None:
        print(f"dataset {args.dataset!r} already exists in workspace {args.workspace!r}; nothing to do")
        return 0
    settings = rg.Settings(
        fields=[rg.TextField(name="text")],
        questions=[rg.LabelQuestion(name="label", labels=labels)],
        metadata=[rg.TermsMetadataProperty(name="source")],
        distribution=rg.TaskDistribution(min_submitted=1),
    )
    ds = rg.Dataset(name=args.dataset, workspace=args.workspace, settings=settings, client=client).create()
    me = client.me
    ds.records.log([
        rg.Record(
            id=r["id"], fields={"text": r["text"]}, metadata={"source": r.get("source", "example")},
            responses=[rg.Response("label", r["label"], user_id=me.id, status="submitted")] if r.get("label") else [],
        )
        for r in rows
    ])
    print(f"dataset {args.dataset!r} in workspace {args.workspace!r}: {len(rows)} records, "
          f"{sum(1 for r in rows if r.get('label'))} answered; labels {', '.join(labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
