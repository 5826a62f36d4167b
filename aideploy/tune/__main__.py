"""``python -m aideploy.tune --worker SPEC --index I``: one tuning worker process."""

import sys

from aideploy.tune.workers import worker_main

sys.exit(worker_main(sys.argv[1:]))
