"""Region classification datasets: samples of (image, ROA, label)."""
