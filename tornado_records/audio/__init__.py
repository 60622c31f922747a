"""What the service knows of the sound: the analysis of each record (facts, analyses, analyzer) and the programs it runs."""
