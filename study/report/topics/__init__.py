"""The report by topic: each module holds one analysis's figure and its report blocks."""
