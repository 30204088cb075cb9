"""Reading detected signs: crops, the crop classifier and (later) OCR, into sign meanings."""
