"""The contract's tables in code: pandera models of the inputs, Arrow schemas of the outputs, the input set
a run works on, and the one shape of a quarantine row. Imports nothing else of the pipeline."""
