"""The c-BTM prompt classifier: analyzer, training, fast inference, safe artifacts, evaluation.

``load(path=None)`` returns a :class:`Classifier` (the bundled model when ``path`` is None);
``Classifier.predict(text)`` returns a :class:`Prediction` with the cluster, distances, soft
scores, the ranking and the reason. Training lives in ``classify.training`` (scikit-learn).
"""

from expert_router.classify.model import Classifier, Prediction, default_model_dir, load

__all__ = ["Classifier", "Prediction", "default_model_dir", "load"]
