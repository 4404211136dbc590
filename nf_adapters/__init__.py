"""3GPP knowledge: SBI header codecs, ProblemDetails, discovery parameters, NGAP routing keys."""
