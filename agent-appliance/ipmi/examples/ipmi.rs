//! A tiny command-line client, for trying the crate against a BMC:
//! `cargo run -p outband-ipmi --example ipmi -- HOST:PORT USER PASSWORD status|on|off|cycle|reset|soft|id|boot|pxe|sol [SUITES]`
//! (the password is taken from the command line: for test BMCs only).

use outband_ipmi::{BootDevice, ChassisAction, Credentials, Options, Session};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: ipmi HOST:PORT USER PASSWORD COMMAND [SUITES,..]");
        std::process::exit(2);
    }
    let addr = args[0].parse().expect("HOST:PORT");
    let creds = Credentials::new(args[1].clone(), args[2].clone());
    let mut opts = Options::default();
    if let Some(s) = args.get(4) {
        opts.cipher_suites = s.split(',').map(|x| x.parse().expect("suite")).collect();
    }
    let r = smol::block_on(async {
        let mut s = Session::open(addr, &creds, &opts).await?;
        eprintln!("session open, cipher suite {}", s.cipher_suite());
        match args[3].as_str() {
            "status" => println!("{:?}", s.chassis_status().await?),
            "id" => println!("{:?}", s.device_id().await?),
            "on" => s.chassis_control(ChassisAction::PowerOn).await?,
            "off" => s.chassis_control(ChassisAction::PowerOff).await?,
            "cycle" => s.chassis_control(ChassisAction::PowerCycle).await?,
            "reset" => s.chassis_control(ChassisAction::HardReset).await?,
            "soft" => s.chassis_control(ChassisAction::SoftShutdown).await?,
            "boot" => println!("{:?}", s.boot_device().await?),
            "pxe" => s.set_boot_device(BootDevice::Pxe, false).await?,
            "sol" => {
                let mut sol = s.sol().await?;
                sol.write_all(b"hello sol\r\n").await?;
                sol.flush().await?;
                let mut buf = [0u8; 256];
                let n = sol.read(&mut buf).await?;
                println!("{:?}", String::from_utf8_lossy(&buf[..n]));
                return sol.close().await;
            }
            other => panic!("unknown command {other}"),
        }
        s.close().await
    });
    if let Err(e) = r {
        eprintln!("error [{}]: {e}", e.code());
        std::process::exit(1);
    }
}
