import ConvergeSimulationCLI

// The simulator on its own network, over the core model or real SQLite stores: no server
// stack in this executable. `converge-sim-http` adds the real sync server.
SimulatorMain.main(commandName: "converge-sim", httpRunner: nil)
