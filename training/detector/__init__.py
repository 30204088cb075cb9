"""The sign detector: YOLOv8 trained with ultralytics offline, exported, quantised and scored."""
