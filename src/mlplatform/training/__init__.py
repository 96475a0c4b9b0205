"""Demo data, features and models: generate card transactions, train and register the fraud detectors."""
