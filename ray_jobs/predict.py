"""`ray job submit` entry point: python ray_jobs/predict.py --model RUN --source URI --out URI
[--format csv] [--top-k K] [--min-confidence P --as-manifest FILE] ...

Joins the cluster named by RAY_ADDRESS (set by the job server), else starts a local one.
"""

import sys

from tljob.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
