"""Entry point of a SageMaker training job (the estimator runs it from the job's source dir):
maps the container's environment onto Hydra overrides and runs train.py's main."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from bincount.launch.sagemaker_entry import main  # noqa: E402

if __name__ == "__main__":
    main()
