"""Datasets: importers for the formats users have, manifests, track-safe splits and scene synthesis.

Every importer turns a dataset on disk into `LabeledImage` records (boxes in pixels of the file);
the rest of the pipeline works on those records only, whatever the source format was.
"""
