"""The console's design system: one stylesheet, the words for dates, durations and figures, form parts.

It imports nothing of ours, so every other app's pages may use it.
"""
