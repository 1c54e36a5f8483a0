"""Task-specific Python beside the guest templates: what ``convert``, ``build``, ``run`` and
``bench`` need for one task beyond tensors (``embedding``: text-embedding; ``vad``:
voice-activity; ``face``: face-detection)."""
