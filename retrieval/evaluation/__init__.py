"""Quality measured against ground truth: clip search vs the grid metric (``clips``), text-image
zero-shot and recall (``text_image``), prediction-augmented queries (``augment``), and the
raw-pixel / ImageNet baselines they are compared with (``baselines``); frame search
(``frames``), analogs judged by best tracks (``analogs``), and the trained model's scores kept in
the registry (``records``); the ranking scores they share (``ranking``)."""
