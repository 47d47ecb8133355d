# pip install -r tools/eval/requirements.txt   (pillow numpy scikit-image pdqhash==0.2.8 imagehash==4.3.2 resvg-py==0.5.0)
"""One command: fetch the sources (once), build the corpus, score the report split.

    cargo build --release
    python3 tools/eval/run.py --out /tmp/lookalike-eval-a                  # variant a
    python3 tools/eval/run.py --out /tmp/lookalike-eval-b --variant b      # variant b
    python3 tools/eval/run.py --out /tmp/lookalike-eval-a --split tune     # tune on a's tune split only

Steps (each skipped when its output is already there and matches the options):
  1. tools/eval/sources.py       -> CACHE (Debian wallpaper and stamp packages, simple-icons, skimage photos)
  2. tools/eval/build_corpus.py  -> OUT/corpus (tune + report splits of one variant)
  3. tools/eval/score.py         -> the table on stdout, and Markdown in --results
     (default: tools/eval/results.md for the default corpus -- variant a, seed 1, no extra
      distractors -- on the report split, OUT/results-SPLIT.md otherwise, so a --small,
      variant b or tune run never overwrites it)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build_corpus  # noqa: E402
import score  # noqa: E402
import sources  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="work directory outside the repo, e.g. /tmp/lookalike-eval")
    ap.add_argument("--cache", type=Path, default=sources.DEFAULT_CACHE, help="sources cache (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="quick run: ~40 genuine images and ~350 queries per split")
    ap.add_argument("--variant", choices=build_corpus.VARIANTS, default="a",
                    help="corpus generator: a (default) or b (other layouts, logo placements, canvases, edit "
                         "parameters; the same pools' tune/report split)")
    ap.add_argument("--distractors", type=int, help="distractors per split (default 300, --small 30)")
    ap.add_argument("--extra-distractors", type=int, default=0, metavar="N",
                    help="index N more cheap unrelated images per split (e.g. 20000)")
    ap.add_argument("--split", choices=["tune", "report"], default="report")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the corpus even if OUT/corpus matches")
    ap.add_argument("--lookalike", type=Path, default=HERE.parents[1] / "target/release/lookalike")
    ap.add_argument("--lookalike-score", default="verified", choices=sorted(score.LOOKALIKE_SCORERS))
    ap.add_argument("--lookalike-source", metavar="TEXT", help="what the binary was built from (for the report)")
    ap.add_argument("--methods", default=",".join(score.METHODS))
    ap.add_argument("--results", type=Path)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args(argv)
    t0 = time.time()
    out = args.out.expanduser().resolve()
    build_corpus.check_outside_repo(out)
    cache = args.cache.expanduser().resolve()
    if not args.lookalike.exists():
        sys.exit(f"{args.lookalike} not found: run `cargo build --release` first")

    if not all((cache / f).exists() for f in ("pool.json", "stamps.json", "sources.json")):
        print(f"== fetching sources into {cache}", flush=True)
        sources.main(["--cache", str(cache)])

    corpus = out / "corpus"
    meta = corpus / "corpus.json"
    want = {"seed": args.seed, "small": args.small, "variant": args.variant,
            "extra_distractors": args.extra_distractors}
    have = json.loads(meta.read_text()) if meta.exists() else None
    same = (have is not None and all(have.get(k, "a" if k == "variant" else 0) == v for k, v in want.items())
            and "stamps" in have.get("sources", {})
            and (args.distractors is None or have["sizes"]["distractors"] == args.distractors)
            and (args.distractors is not None or have["sizes"]["distractors"] ==
                 build_corpus.SIZES["small" if args.small else "default"]["distractors"]))
    if args.rebuild or not same:
        print(f"== building the corpus in {corpus}", flush=True)
        build_corpus.build(corpus, cache, args.seed, args.small, args.jobs, args.distractors, args.variant,
                           args.extra_distractors)
    else:
        print(f"== reusing the corpus in {corpus} (seed {args.seed}, variant {args.variant}; --rebuild to rebuild)",
              flush=True)
    t_build = time.time() - t0

    results = args.results
    if results is None:
        results = (HERE / "results.md") if (not args.small and args.split == "report" and args.seed == 1
                                            and args.variant == "a" and not args.extra_distractors
                                            and args.distractors is None) else out / f"results-{args.split}.md"
    print(f"== scoring split {args.split}", flush=True)
    sargv = ["--corpus", str(corpus), "--split", args.split, "--lookalike", str(args.lookalike),
             "--lookalike-score", args.lookalike_score, "--methods", args.methods, "--jobs", str(args.jobs),
             "--results", str(results)] + (["--lookalike-source", args.lookalike_source] if args.lookalike_source else [])
    cmd = "python3 tools/eval/run.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    rc = score.main(sargv, ctx_command=cmd)
    print(f"== done: corpus {t_build:.0f} s, total {time.time() - t0:.0f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
