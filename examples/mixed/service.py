"""Two scikit-learn models behind one BentoML service: one batchable API, one plain API.

Both models train in ``__init__`` on datasets that ship with scikit-learn, so the example
needs no download and no model store.

    bentoml serve service:TabularModels

    # batchable: 8x8 digit images, flattened to 64 pixel values (0-16), one row per image
    curl -X POST http://localhost:3000/classify_digits \
        -H 'Content-Type: application/json' -d '{"images": [[0, 0, 5, 13, ...64 values]]}'

    # not batchable: one iris flower, 4 measurements in cm
    curl -X POST http://localhost:3000/predict_iris \
        -H 'Content-Type: application/json' -d '{"measurements": [5.1, 3.5, 1.4, 0.2]}'
"""

from __future__ import annotations

import typing as t

import bentoml
import numpy as np
from bentoml.validators import DType, Shape
from pydantic import Field

if t.TYPE_CHECKING:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline


@bentoml.service(
    resources={"cpu": "2"},
    traffic={"timeout": 10},
)
class TabularModels:
    def __init__(self) -> None:
        from sklearn.datasets import load_digits, load_iris
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        digits = load_digits()
        self.digits_model: Pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self.digits_model.fit(digits.data, digits.target)

        iris = load_iris()
        self.iris_model: RandomForestClassifier = RandomForestClassifier(n_estimators=50, random_state=0)
        self.iris_model.fit(iris.data, iris.target)
        self.iris_species: list[str] = [str(name) for name in iris.target_names]

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=500)
    def classify_digits(
        self, images: t.Annotated[np.ndarray, Shape((-1, 64)), DType("float32")]
    ) -> np.ndarray:
        """Predict the digit (0-9) in each flattened 8x8 image."""
        return self.digits_model.predict(images)

    @bentoml.api
    def predict_iris(
        self, measurements: t.Annotated[list[float], Field(min_length=4, max_length=4)]
    ) -> dict[str, t.Any]:
        """Predict the species of one iris from sepal length/width and petal length/width (cm)."""
        probabilities = self.iris_model.predict_proba(np.asarray([measurements]))[0]
        best = int(np.argmax(probabilities))
        return {
            "species": self.iris_species[best],
            "probabilities": dict(zip(self.iris_species, probabilities.round(4).tolist(), strict=True)),
        }
