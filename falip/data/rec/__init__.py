"""RefCOCO / RefCOCO+ / RefCOCOg: refer toolkit, ReCLIP jsonl and HF layouts, detections, writers."""
