"""Resume: the loader's saved position (its fingerprint and format version) and the elastic
resume of a training stream saved on N ranks and loaded on M."""
