"""Floor 8: the click commands and their text output.
"""
