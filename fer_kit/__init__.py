"""fer_kit: facial expression recognition in the wild, the ABAW papers reproduced for teaching."""
__version__ = "0.1.0"
