"""`ray job submit` entry point: python ray_jobs/train.py --config FILE [--set k=v ...].

Joins the cluster named by RAY_ADDRESS (set by the job server), else starts a local one.
"""

import sys

from tljob.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
