"""Training data: manifest -> WebDataset tar shards -> caches of frozen-encoder outputs -> crop data sets."""
