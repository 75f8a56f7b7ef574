"""Floor 0, the vocabulary: errors, durations, redaction, results, the condition language, logs.

The only part of ``agent`` that plugins (``checks``, ``remediations``) and channels import.
"""
