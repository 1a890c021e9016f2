"""Build the bench's built-in prompt source from a C4 sample (see data/PROMPTS.md).

Keeps the first 600 documents of at least 400 tokens (``expert_router.tokenizer``), each cut to
640 tokens, as gzip JSON Lines with ``id``, ``url`` and ``text``. Deterministic output.

    python scripts/make_prompts.py ../shared/data/c4_sample.train.jsonl.gz \
        src/expert_router/data/prompts.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

from expert_router.tokenizer import count_tokens, truncate

MIN_TOKENS = 400
KEEP_TOKENS = 640
COUNT = 600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="C4 sample, gzip JSON Lines with 'text'")
    parser.add_argument("out", type=Path, help="output .jsonl.gz")
    args = parser.parse_args()
    rows = []
    with gzip.open(args.source, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            text = doc["text"].strip()
            if count_tokens(text) < MIN_TOKENS:
                continue
            rows.append(
                {"id": doc.get("id"), "url": doc.get("url"), "text": truncate(text, KEEP_TOKENS)}
            )
            if len(rows) == COUNT:
                break
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    args.out.write_bytes(buf.getvalue())
    print(f"{len(rows)} documents, {len(buf.getvalue())} bytes -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
