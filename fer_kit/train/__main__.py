"""`python -m fer_kit.train ...` and `torchrun ... -m fer_kit.train ...`: see cli.py."""
import os

from .cli import main
from .run_folder import NotTheSameRunError, RunInUseError

try:
    main()
except (FileExistsError, PermissionError, RunInUseError, NotTheSameRunError) as e:
    # what to do, without a traceback; under torchrun once, by rank 0 (every rank stops)
    raise SystemExit(f"python -m fer_kit.train: {e}" if os.environ.get("RANK", "0") == "0" else 1) from None
