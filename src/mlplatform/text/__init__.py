"""What serving and explainability both know about text models (a leaf package: neither imports the other).

* :mod:`.limits`: a model's context length and its default number of output tokens.
"""
