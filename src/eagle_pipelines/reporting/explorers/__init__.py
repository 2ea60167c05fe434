"""The interactive explorers of the reports other than the experiment template's (``reporting/explorer.py``: eagle_coco
and eagle_mmvp): ``repope`` (a wrong answer, its counter token's map, the removal sequence), ``video`` (per-frame
maps, a frame selector, the frame-importance strip) and ``mitigation`` (per token: N and S per layer, the token's
regions, plain against guided answers). ``common`` holds what they share: the page's style, the thumbnail selector,
the colour/grey toggle and the JSON embedding."""
