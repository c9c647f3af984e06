"""The FER protocol: the expression vocabulary, crowd votes, splits and folds, labelled samples, face framing."""
