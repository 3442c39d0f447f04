import ConvergeSimulationCLI
import ConvergeSimulationHTTP

// The simulator with `--transport http`: device stores and sync engines against the real
// sync server on loopback (SQLite or PostgreSQL storage, one or several instances).
SimulatorMain.main(commandName: "converge-sim-http", httpRunner: { simulateOverHTTPBlocking($0, progress: $1) })
