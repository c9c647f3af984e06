"""The one canonical expression vocabulary of the project, in its fixed label order."""

# Index = class id everywhere in frafer (datasets, heads, reports).
EXPRESSIONS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
BASIC_EXPRESSIONS = EXPRESSIONS[:7]  # the 7 basic expressions (contempt dropped)

# FERPlus vote-column order (fer2013new.csv): 8 emotions, then "unknown" and "NF" (not a face).
FERPLUS_COLUMNS = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)
