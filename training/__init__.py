"""Model training for RoadSign: datasets, YOLOv8 training, quantised export and the MLflow registry.

Nothing imports this package; it may import `edge_agent`'s inference runtime so exported models are
scored by the exact code devices run. Torch and ultralytics load only inside the commands.
"""
