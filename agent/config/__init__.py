"""Floor 3: read the config file, expand ``${VAR}``, validate it once; one frozen ``Config``.
"""
