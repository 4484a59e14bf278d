"""LM transforms (LanguageModel -> LanguageModel): temperature, truncation samplers and penalties, as
guidance maps Denoisers. Each reshapes the inner model's next-token distributions per window position."""
