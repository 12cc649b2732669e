"""Trains the small model the inference-peer tests serve and lays out an
MLServer model repository for it.

    python train.py REPO_DIR

writes REPO_DIR/settings.json (server settings; ports come from the
MLSERVER_HTTP_PORT / MLSERVER_GRPC_PORT environment variables) and
REPO_DIR/iris/{model-settings.json,model.joblib}: a LogisticRegression on the
four float features of the iris data set that ships inside scikit-learn (no
download). Deterministic: the same data and solver give the same model.
"""

import pathlib
import shutil
import sys

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} REPO_DIR (got {sys.argv[1:]!r})")
    repo = pathlib.Path(sys.argv[1])
    model_dir = repo / "iris"
    model_dir.mkdir(parents=True, exist_ok=True)
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    accuracy = model.score(x, y)
    if accuracy < 0.9:
        sys.exit(f"training accuracy {accuracy:.3f} is below 0.9: the model did not learn")
    joblib.dump(model, model_dir / "model.joblib")
    shutil.copy(HERE / "model-settings.json", model_dir / "model-settings.json")
    shutil.copy(HERE / "settings.json", repo / "settings.json")
    print(f"trained iris accuracy={accuracy:.3f} features={x.shape[1]}", flush=True)


if __name__ == "__main__":
    main()
