"""`ray job submit` entry point: python ray_jobs/tune.py --config SWEEP [--set k=v ...]
[--resume].

Joins the cluster named by RAY_ADDRESS (set by the job server), else starts a local one.
"""

import sys

from tljob.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
